# Top-level convenience targets.  `make test` is what CI runs.
PYTHON ?= python3

.PHONY: guests test lint bench clean

guests:
	$(MAKE) -C guests

lint:
	ruff check src tests
	mypy --strict src/pyxen

test: guests lint
	$(PYTHON) -m pytest tests -q

bench: guests
	$(PYTHON) bench/hypercall.py
	$(PYTHON) bench/events.py
	$(PYTHON) bench/xenstore.py
	$(PYTHON) bench/sched.py

clean:
	$(MAKE) -C guests clean
	rm -rf bench/build
