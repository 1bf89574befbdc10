# tokenserver: `make run` serves on 127.0.0.1:8000, `make test` runs the tests.
# Both set up what a fresh machine lacks: the MySQL client headers (for
# mysqlclient), a virtualenv in .venv with requirements.txt, a .env with keys.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run demo serve test setup migrate lint bench clean

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "tokenserver needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)." >&2; \
	  echo "Run with PYTHON=/path/to/python3.11 make ..." >&2; exit 1; }
	@missing=""; \
	  pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null \
	    || missing="$$missing default-libmysqlclient-dev pkg-config"; \
	  command -v gcc >/dev/null || missing="$$missing build-essential"; \
	  $(PYTHON) -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
	    || missing="$$missing python3-dev"; \
	  $(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	  if [ -n "$$missing" ]; then \
	    echo "Installing what building mysqlclient needs:$$missing"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	  fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

.env: | $(VENV)/.installed
	$(PY) -m tokenserver.envfile .env

setup: $(VENV)/.installed .env

migrate: setup
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	@echo ""
	@echo "tokenserver on http://$(HOST):$(PORT)/ (console: /admin/, API: /api/)."
	@echo "Create the first admin user in another shell:"
	@echo "  $(PY) manage.py createsuperuser"
	@echo "or without prompts:"
	@echo "  DJANGO_SUPERUSER_USERNAME=admin DJANGO_SUPERUSER_EMAIL=admin@example.com \\"
	@echo "  DJANGO_SUPERUSER_PASSWORD=... $(PY) manage.py createsuperuser --noinput"
	@echo ""
	$(PY) manage.py runserver $(HOST):$(PORT)

# The README's walkthrough offline: a WeChat-format provider on 127.0.0.1:8090, a realm,
# a secret and an app client for it (printed), and the server of `make run`, allowed to
# fetch from loopback. Ctrl-C stops both.
demo: migrate
	$(PY) manage.py collectstatic --noinput --verbosity 0
	TOKENSERVER_UPSTREAM_ALLOWED_NETWORKS=127.0.0.1/32 $(PY) manage.py demo --serve $(HOST):$(PORT)

# The console's browser tests drive Debian's Chromium (never a browser download).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@echo "Installing Debian's Chromium for the console's browser tests"
	$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null

# The production configuration: migrations applied, static files collected, granian
# (serve.py) and the refresher beside it; Ctrl-C or SIGTERM stops both.
# DATABASE_URL / REDIS_URL (environment or .env) choose the backends.
serve: migrate
	$(PY) serve.py --refresher

# Tests keep their cache entries under their own prefix (Redis is shared).
test: setup $(CHROMIUM)
	CACHE_KEY_PREFIX=tokenserver-test $(PY) -m pytest $(PYTEST_ARGS)

# The token endpoint under load on this machine, loopback only, about 1.5 minutes: hot path
# against the floor, herd, refresh storm, memory; a table and bench/results.json. Installs
# wrk and apache2-utils with apt-get when missing. Options: BENCH_ARGS="--help".
bench: setup
	$(PY) bench/token_bench.py $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) staticfiles test_db.sqlite3* test-artefacts
