/* The status board keeps itself current: it polls data.json (one character per tile, in page
   order) and changes only the tiles, counts and lists that differ. No other host, no eval. */
(function () {
  "use strict";
  var main = document.getElementById("board");
  if (!main) { return; }
  var src = main.dataset.src, gen = main.dataset.gen;
  var every = parseInt(main.dataset.refresh, 10) || 2000;
  var words = JSON.parse(main.dataset.words);
  var forWord = main.dataset.for, noneWord = main.dataset.none;
  var tiles = main.querySelectorAll(".t");
  var current = main.dataset.s || "";
  var stale = document.getElementById("stale");

  function item(dotClass, id, name, text) {
    var li = document.createElement("li");
    var dot = document.createElement("span");
    var link = document.createElement("a");
    dot.className = "dot " + dotClass;
    link.href = "/status/devices/" + encodeURIComponent(id);
    link.textContent = name;
    li.appendChild(dot);
    li.appendChild(link);
    li.appendChild(document.createTextNode(text));
    return li;
  }

  function note(text) {
    var li = document.createElement("li");
    li.className = "none";
    li.textContent = text;
    return li;
  }

  function fill(id, rows, total, toItem) {
    var ul = document.getElementById(id);
    if (!ul || !rows) { return; }
    var items = rows.map(toItem);
    if (!items.length) { items = [note(noneWord)]; }
    if (total > rows.length) { items.push(note("+" + (total - rows.length))); }
    ul.replaceChildren.apply(ul, items);
  }

  var CHARS = {up: "u", degraded: "g", maintenance: "m", unreachable: "r", down: "d", unknown: "n"};

  function apply(d) {
    if (d.gen !== gen) { window.location.reload(); return; }
    var s = d.s;
    for (var i = 0; i < s.length && i < tiles.length; i++) {
      if (s.charAt(i) !== current.charAt(i)) {
        tiles[i].className = "t s-" + s.charAt(i);
        var w = tiles[i].querySelector(".w");
        if (w) { w.textContent = words[s.charAt(i)]; }
      }
    }
    current = s;
    main.dataset.s = s;
    Object.keys(d.counts || {}).forEach(function (k) {
      var el = document.getElementById("c-" + k);
      if (el) { el.textContent = d.counts[k]; }
    });
    fill("incidents", d.incidents, d.incidents_total, function (x) {
      return item("s-" + CHARS[x.status], x.id, x.name, " · " + x.word + " · " + forWord + " " +
                  x["for"] + (x.cause ? " · " + x.cause : ""));
    });
    fill("maintenance", d.maintenance, d.maintenance_total, function (x) {
      return item("s-m", x.id, x.name, x.why ? " · " + x.why : "");
    });
    var up = document.getElementById("updated");
    if (up) { up.textContent = new Date().toLocaleTimeString(document.documentElement.lang, {hour12: false}); }
  }

  function tick() {
    fetch(src, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.json(); })
      .then(function (d) { stale.hidden = true; document.body.classList.remove("is-stale"); apply(d); })
      .catch(function () { stale.hidden = false; document.body.classList.add("is-stale"); })
      .then(function () { window.setTimeout(tick, every); });
  }
  window.setTimeout(tick, every);
}());
