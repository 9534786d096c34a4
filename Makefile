# Top-level convenience targets.  `make test` is what CI runs.
# `make test` installs what it needs first (test-deps): on a fresh machine the
# README's two commands are the whole set-up.
PYTHON ?= python3
PIP_INSTALL ?= $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: guests test test-deps lint bench clean

guests:
	$(MAKE) -C guests

# pyxen and the `test` extra of pyproject.toml (pytest, ruff, mypy, ...),
# pip-installed only when one of them is missing.
test-deps:
	@$(PYTHON) .ci/test-deps.py pyproject.toml || $(PIP_INSTALL) -e '.[test]'

lint: test-deps
	$(PYTHON) -m ruff check src tests
	$(PYTHON) -m mypy --strict src/pyxen

test: guests test-deps lint
	$(PYTHON) -m pytest tests -q

bench: guests
	$(PYTHON) bench/hypercall.py
	$(PYTHON) bench/events.py
	$(PYTHON) bench/xenstore.py
	$(PYTHON) bench/sched.py
	$(PYTHON) bench/dom0less.py
	$(PYTHON) bench/blkback.py
	$(PYTHON) bench/netback.py
	$(PYTHON) bench/hvm_ioreq.py
	$(PYTHON) bench/vmi_events.py

clean:
	$(MAKE) -C guests clean
	rm -rf bench/build
