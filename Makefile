# erofsd: every target sets up what it needs first (apt packages, .venv).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup guest demo test bench clean

setup:
	@scripts/setup.sh

# The 6.1 kernel and initramfs the fscache tests boot in qemu: built once per
# machine (about 5 minutes), before pytest and outside any test's timeout.
guest: setup
	@scripts/guest/build.sh >/dev/null

demo: setup
	@scripts/demo.sh

test: setup guest
	$(VENV)/bin/pytest $(TEST_ARGS)

bench: setup guest
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
