# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both bootstrap .venv first (idempotent: a second run with nothing changed takes seconds).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# CI and a fresh clone have no ROS install: the venv is the underlay of the colcon build.
export AMENT_PREFIX_PATH ?= $(abspath $(VENV))
export CMAKE_PREFIX_PATH ?= $(abspath $(VENV))

PACKAGE_SOURCES := CMakeLists.txt package.xml pyproject.toml README.md \
	$(wildcard cmake/* msg/*.msg launch/* config/*) \
	$(shell find sparserefine_ros -name '*.py' 2>/dev/null)

.PHONY: setup demo test test-fast lint colcon-test bench clean

setup: $(VENV)/.installed

# The environment: pinned wheels, the ROS wheels' CMake files fixed for this venv, and a default
# AMENT_PREFIX_PATH (the wheels do not set one) so ament_index_python finds installed packages.
$(VENV)/.requirements: requirements.txt scripts/patch_ros_wheel_cmake.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	touch $(VENV)/COLCON_IGNORE
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) scripts/patch_ros_wheel_cmake.py
	echo 'import os, sys; os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)' \
		> $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ament_prefix_path.pth
	touch $@

# The package itself, built by CMake/rosidl (messages) and installed into the venv like any wheel.
$(VENV)/.installed: $(VENV)/.requirements $(PACKAGE_SOURCES)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps .
	touch $@

demo: setup
	$(PY) -m sparserefine_ros.tools.cli demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A real ROS 2 user's build path: colcon builds the ament_cmake package with the venv as underlay
# and runs its CTest/pytest tests against the colcon install.
colcon-test: setup
	mkdir -p build && touch build/COLCON_IGNORE
	cd build && ../$(VENV)/bin/colcon --log-base colcon-log build --paths .. \
		--build-base colcon-build --install-base colcon-install \
		--cmake-args -DPython3_EXECUTABLE=$(abspath $(PY)) -DBUILD_TESTING=ON
	cd build && ../$(VENV)/bin/colcon --log-base colcon-log test --paths .. \
		--build-base colcon-build --install-base colcon-install
	cd build && ../$(VENV)/bin/colcon test-result --test-result-base colcon-build --verbose

# The whole suite, slow end-to-end tests included; pytest's summary is the last thing printed.
test: lint colcon-test
	$(PY) -m pytest

# The quick loop while developing: everything but the tests marked slow.
test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) -m sparserefine_ros.tools.cli bench --json build/bench.json

clean:
	rm -rf build $(VENV) demo_output
