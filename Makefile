# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := s3fs fuse3 docker-registry skopeo umoci rclone
APT_COMMANDS := s3fs fusermount3 docker-registry skopeo umoci rclone

.PHONY: demo test venv sysdeps lint typecheck unit fixtures bench clean

$(BIN)/ocigc: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,s3]'
	touch $(BIN)/ocigc

venv: $(BIN)/ocigc

# System packages the test suite needs (real object storage, registry and layout tools).
sysdeps:
	@missing=""; for c in $(APT_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages (missing:$$missing)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

demo: venv
	$(BIN)/python scripts/demo.py

lint: venv
	$(BIN)/ruff check ocigc tests bench fixtures scripts
	$(BIN)/mypy

test: sysdeps venv lint
	$(BIN)/python -m pytest -q -ra -n 2 --dist worksteal tests

bench: sysdeps venv
	$(BIN)/python -m bench

fixtures: sysdeps venv
	$(BIN)/python fixtures/build.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
