# famwidget: two commands do everything on a fresh machine.
#   make demo   set up, then explain the shipped gallery and write demo-output/famwidget-demo.html
#   make test   set up, then run every check (ruff, vitest, pytest incl. real-browser tests)
# Set-up creates or reuses .venv/ and node_modules/, installs what is missing (torch pinned in
# constraints.txt), installs Debian's Chromium when missing, and builds the JS bundle.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.famwidget-installed
BUNDLE := famwidget/widget/static/widget.js
JS := $(wildcard js/*.js js/*.mjs js/*.css)

.PHONY: setup demo test lint pytest vitest chromium clean

setup: $(STAMP) $(BUNDLE) chromium

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt torch torchvision hatchling hatch-jupyter-builder editables
	$(PIP) install -c constraints.txt --no-build-isolation -e ".[test]"
	touch $(STAMP)

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

$(BUNDLE): node_modules/.package-lock.json $(JS)
	npm run build --silent

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

demo: setup
	$(PY) -m famwidget demo

lint: setup
	$(VENV)/bin/ruff check famwidget tests
	$(VENV)/bin/ruff format --check famwidget tests

vitest: setup
	npx vitest run

pytest: setup
	$(PY) -m pytest -q -ra

test: lint vitest pytest

clean:
	rm -rf $(VENV) node_modules $(BUNDLE) demo-output artifacts
