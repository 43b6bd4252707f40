"""Typing mistakes of a Chinese input method in YAML, and problem messages in Chinese.

With a Chinese IME on, the punctuation keys give full-width characters: ``：`` for ``:``,
``，`` for ``,``, ``－`` for ``-``, and the space bar a full-width space (U+3000). YAML takes
them for text, so the file fails somewhere else, often on another line, with a parser message
about the consequence. ``scan`` finds them where they were typed: a full-width colon after a key,
a full-width comma or colon inside a flow collection (``[...]``, ``{...}``), a full-width dash
as a list marker, a full-width space in the indentation. It skips comments, quoted text and
block scalars (``|``, ``>``), where such characters are ordinary Chinese text.

``translate`` gives a problem message in Chinese (``--lang zh``) from the English one, for the
messages staff meet most; the rest stay English.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

Lang = str  # "en" or "zh"
LANGS = ("en", "zh")

_FULL = {
    "：": ("全角冒号", "full-width colon", ":"),
    "，": ("全角逗号", "full-width comma", ","),
    "－": ("全角减号", "full-width dash", "-"),
}
_BLOCK_START = re.compile(r":[ \t]*[|>][-+0-9]*[ \t]*(#.*)?$")


def hint(char: str, lang: Lang) -> str:
    if char == "\u3000":
        if lang == "zh":
            return "用全角空格（U+3000）缩进 — 请改用半角空格"
        return "全角空格 (full-width space U+3000) in the indentation — indent with ordinary spaces"
    zh, en, ascii_char = _FULL[char]
    if lang == "zh":
        return f"{zh} '{char}' — 请改用半角 '{ascii_char}'"
    return f"{zh} '{char}' ({en}) — use '{ascii_char}'"


def scan(text: str) -> Iterator[tuple[int, int, str]]:
    """(line, column, character) of each IME slip, 1-based, in file order."""
    block_indent: int | None = None
    for number, line in enumerate(text.splitlines(), 1):
        indent = len(line) - len(line.lstrip(" \t\u3000"))
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue  # inside a block scalar: text
            block_indent = None
        prefix = line[:indent]
        if "\u3000" in prefix:
            yield number, prefix.index("\u3000") + 1, "\u3000"
        yield from _scan_line(number, line, indent)
        if _BLOCK_START.search(_code_part(line)):
            block_indent = indent


def _code_part(line: str) -> str:
    """The line without its comment (a '#' after a space, outside quotes)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t\u3000"):
            return line[:i]
    return line


def _scan_line(number: int, line: str, indent: int) -> Iterator[tuple[int, int, str]]:
    code = _code_part(line)
    rest = code[indent:]
    col = indent
    while rest[:1] in ("-", "－") and rest[1:2] in (" ", "\u3000", ""):
        if rest[0] == "－":
            yield number, col + 1, "－"
        step = len(rest) - len(rest[1:].lstrip(" \u3000"))
        col, rest = col + step, rest[step:]
    depth, quote, seen_colon = 0, "", False
    for i, ch in enumerate(rest, col + 1):
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == ":" and depth == 0:
            seen_colon = True  # a value follows: its full-width colons are text
        elif ch == "：" and (depth > 0 or not seen_colon):
            if depth > 0 or _looks_like_key(rest[: i - col - 1]):
                yield number, i, ch
                if depth == 0:
                    seen_colon = True
        elif ch == "，" and depth > 0:
            yield number, i, ch


def _looks_like_key(before: str) -> bool:
    """Text before a full-width colon that reads as a mapping key: short, one word."""
    key = before.strip(" \u3000")
    return bool(key) and len(key) <= 40 and not any(c in key for c in " \u3000，。")


# ---- messages in Chinese --------------------------------------------------------------------
_NOUNS = {
    "a string": "字符串", "an integer": "整数", "a whole number": "整数", "a number": "数字",
    "true or false": "true 或 false", "a list": "列表", "a mapping": "映射（键: 值）",
    "nothing (an empty value)": "空值",
}
_RULES: list[tuple[re.Pattern[str], str]] = [(re.compile(p), t) for p, t in [
    (r"^missing required key '(.+)'$", r"缺少必填键 '\1'"),
    (r"^unknown key '(.+)' \(did you mean '(.+)'\?\)$", r"未知的键 '\1'（是否应为 '\2'？）"),
    (r"^unknown key '(.+)' \(known keys: (.+)\)$", r"未知的键 '\1'（可用的键：\2）"),
    (r"^unknown key '(.+)'$", r"未知的键 '\1'"),
    (r"^unknown (class|credential|device) '(.+)' \(did you mean '(.+)'\?\)$",
     r"未知的\1 '\2'（是否应为 '\3'？）"),
    (r"^unknown (class|credential|device) '(.+)'$", r"未知的\1 '\2'"),
    (r"^duplicate key '(.+)' \(first at line (\d+)\): YAML would silently keep only the last$",
     r"重复的键 '\1'（第一次出现在第 \2 行）：YAML 只会保留最后一个"),
    (r"^duplicate device id '(.+)' \(first at (.+)\)$", r"重复的设备编号 '\1'（第一次出现在 \2）"),
    (r"^duplicate address '(.+)' \(also (.+)\)$", r"重复的地址 '\1'（与 \2 相同）"),
    (r"^the file is empty: it needs at least 'site:'$", "文件为空：至少需要 'site:'"),
    (r"^the file is not UTF-8 \(byte (0x[0-9a-f]+)\): save it as UTF-8$",
     r"文件不是 UTF-8 编码（字节 \1）：请另存为 UTF-8"),
    (r"^YAML syntax error: (.+)$", r"YAML 语法错误：\1"),
    (r"^must be (>=|>|<=|<) (\S+), got the number (\S+)$", r"必须 \1 \2，实际为 \3"),
]]
_CLASS_WORDS = {"class": "设备类别", "credential": "凭据", "device": "设备"}
_EXPECTED = re.compile(r"^expected (.+?)(?:, got (.+))?$")


def translate(message: str, lang: Lang) -> str:
    if lang != "zh":
        return message
    match = _EXPECTED.match(message)
    if match and match.group(1) in _NOUNS:
        got = match.group(2)
        return f"应为{_NOUNS[match.group(1)]}" + (f"，实际为{_got(got)}" if got else "")
    for pattern, template in _RULES:
        found = pattern.match(message)
        if found:
            text = found.expand(template)
            for en, zh in _CLASS_WORDS.items():
                text = text.replace(f"未知的{en} ", f"未知的{zh} ")
            return text
    return message


def _got(described: str) -> str:
    if described.startswith("the text "):
        return "文本 " + described.removeprefix("the text ")
    if described.startswith("the number "):
        return "数字 " + described.removeprefix("the number ")
    if described.startswith("the boolean "):
        return "布尔值 " + described.removeprefix("the boolean ")
    return _NOUNS.get(described, described)
