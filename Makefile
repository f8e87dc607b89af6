# The two commands a newcomer needs (see README.md):
#   make serve   start the bridge: SQLite in ./data, demo page at http://127.0.0.1:8080/
#   make test    install everything the tests need, then run every test
# Everything is installed into this folder (.venv, node_modules): nothing by hand.

VENV   := .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8080
DATA   ?= data

.PHONY: serve test setup web constraints

# constraints.txt pins every Python package to the version CI runs;
# pyproject.toml itself declares ranges (the bridge installs into other apps).
$(VENV)/.installed: pyproject.toml setup.py constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
	touch $@

# Re-pin after changing dependencies in pyproject.toml: reinstall from the
# ranges alone, then record what was installed.
constraints:
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager -e ".[test,bench]"
	{ sed -n '1,3p' constraints.txt; $(VENV)/bin/pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/dist/client.js: node_modules/.installed $(wildcard web/src/*.ts web/demo/* web/build.mjs)
	npm run --silent build

web: web/dist/client.js

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
/usr/bin/chromium:
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

setup: $(VENV)/.installed web

serve: setup
	$(VENV)/bin/automerge-bridge serve --host $(HOST) --port $(PORT) --data-dir $(DATA)

test: setup /usr/bin/chromium
	npm test --silent
	$(PY) -m pytest
