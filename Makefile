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
	$(PYTHON) -m ruff check src tests bench
	$(PYTHON) -m mypy --strict src/pyxen

test: guests test-deps lint
	$(PYTHON) -m pytest tests -q

# Every benchmark, and one JSON record of the run in bench/history/ (commit,
# host, each benchmark's figures and same-run ratios; bench/history.py table
# sets the records side by side).  startup.py needs qemu-system-x86.
BENCHES = hypercall events xenstore sched dom0less blkback netback hvm_ioreq vmi_events \
	startup scale

bench: guests
	@record=$$($(PYTHON) bench/history.py start) && export PYXEN_BENCH_RECORD=$$record && \
	for b in $(BENCHES); do echo "== bench/$$b.py" && $(PYTHON) bench/$$b.py || exit 1; done && \
	$(PYTHON) bench/history.py show $$record

clean:
	$(MAKE) -C guests clean
	rm -rf bench/build
