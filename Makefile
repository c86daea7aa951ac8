# Two commands do all set-up: `make run` and `make test`. The venv and the install are
# made once; a second run reuses them (llama-cpp-python is built from source only once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# chromium looked for (and installed, as root) once, for the web view's browser test
BROWSER := $(VENV)/.browser
QUESTION ?= What is the capital of France?

.PHONY: install run test bench clean screenshots

$(BIN)/python:
	@echo "Creating $(VENV) (a virtual environment for Swarm)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python scripts/install.py $(VENV)/install.log -e '.[test]'
	@touch $(STAMP)

# The web view's browser test needs Debian's chromium; `make run` does not.
$(BROWSER): scripts/browser.py | $(BIN)/python
	@$(BIN)/python scripts/browser.py $(VENV)/browser.log
	@# the stamp only once a browser is there: a skipped or failed install is tried again
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then \
		touch $(BROWSER); fi

install: $(STAMP)

run: $(STAMP)
	$(BIN)/swarm-ask --local --candidates 3 --max-tokens 48 --temperature 0.5 "$(QUESTION)"

test: $(STAMP) $(BROWSER)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/relay.py --quick
	$(BIN)/python bench/overhead.py --quick
	$(BIN)/python bench/fanout.py --quick
	$(BIN)/python bench/scale.py --quick
	$(BIN)/python bench/early_quorum.py --quick
	$(BIN)/python bench/long_prompt.py --quick
	$(BIN)/python bench/web_idle.py --quick
	$(BIN)/python bench/loop_stall.py
	$(BIN)/python bench/state_cost.py --jobs 100 --rounds 3
	$(BIN)/python bench/gpu_offload.py --rounds 1
	$(BIN)/python bench/eval_consensus.py --quick

# the web page's pictures in the README: a real swarm driven in headless chromium
screenshots: $(STAMP)
	SWARM_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/test_web_e2e.py

clean:
	rm -rf $(VENV) *.egg-info
