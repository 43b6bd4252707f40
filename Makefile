# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use (and refresh it when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# snmpsim must run under a Python that its unprivileged process user can read (not pyenv under
# /root): a separate venv on the distribution's interpreter (see docs/field-notes.md, SNMP).
SYS_PYTHON ?= /usr/bin/python3
SIMVENV := .venv-snmpsim

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(SIMVENV)/.installed:
	@if [ -x $(SYS_PYTHON) ]; then \
	  $(SYS_PYTHON) -m venv $(SIMVENV) && \
	  $(SIMVENV)/bin/pip install -q 'snmpsim>=1.1' 'snmpsim-data>=1.0' 'pysmi>=1.4' && \
	  chmod -R a+rX $(SIMVENV) && touch $@; \
	else echo "no $(SYS_PYTHON): snmpsim tests will skip"; fi

demo: $(BIN)/.installed
	$(BIN)/hallmon demo

test: $(BIN)/.installed $(SIMVENV)/.installed
	$(BIN)/ruff check monitor probes tests bench
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(BIN)/.installed
	for b in bench/[!_]*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(SIMVENV)
