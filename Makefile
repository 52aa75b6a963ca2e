# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both bootstrap .venv first (idempotent: a second run with nothing changed takes seconds).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The second environment: the same package built and its node tested against ROS 2 Jazzy.
JAZZY_VENV ?= .venv-jazzy
JAZZY_PY := $(JAZZY_VENV)/bin/python
JAZZY_TESTS := test/test_node.py test/test_image_codec.py
# CI and a fresh clone have no ROS install: the venv is the underlay of the colcon build.
export AMENT_PREFIX_PATH ?= $(abspath $(VENV))
export CMAKE_PREFIX_PATH ?= $(abspath $(VENV))

PACKAGE_SOURCES := CMakeLists.txt package.xml pyproject.toml README.md \
	$(wildcard cmake/* msg/*.msg launch/* config/*) \
	$(shell find sparserefine_ros -name '*.py' 2>/dev/null)

.PHONY: setup demo test test-fast lint colcon-test jazzy-test bench clean

setup: $(VENV)/.installed

# The environment: pinned wheels, the ROS wheels' CMake files fixed for this venv, and a default
# AMENT_PREFIX_PATH (the wheels do not set one) so ament_index_python finds installed packages.
# One recipe for both environments: $(1) the venv, $(2) its requirements file.
define ros_venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	touch $(1)/COLCON_IGNORE
	$(1)/bin/python -m pip install --quiet --disable-pip-version-check -r $(2)
	$(1)/bin/python scripts/patch_ros_wheel_cmake.py
	echo 'import os, sys; os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)' \
		> $$($(1)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ament_prefix_path.pth
endef

$(VENV)/.requirements: requirements.txt requirements-base.txt scripts/patch_ros_wheel_cmake.py
	$(call ros_venv,$(VENV),requirements.txt)
	touch $@

$(JAZZY_VENV)/.requirements: requirements-jazzy.txt requirements-base.txt scripts/patch_ros_wheel_cmake.py
	$(call ros_venv,$(JAZZY_VENV),requirements-jazzy.txt)
	touch $@

# The package itself, built by CMake/rosidl (messages) and installed into the venv like any wheel.
$(VENV)/.installed: $(VENV)/.requirements $(PACKAGE_SOURCES)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps .
	touch $@

# Jazzy's build: its own prefix and CMake build folder, never the Kilted venv's.
$(JAZZY_VENV)/.installed: $(JAZZY_VENV)/.requirements $(PACKAGE_SOURCES)
	AMENT_PREFIX_PATH=$(abspath $(JAZZY_VENV)) CMAKE_PREFIX_PATH=$(abspath $(JAZZY_VENV)) \
		$(JAZZY_PY) -m pip install --quiet --disable-pip-version-check --no-build-isolation \
		--no-deps --config-settings=build-dir=build/jazzy .
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

# The node's tests again, with rclpy, the messages and this package's build from Jazzy.
jazzy-test: $(JAZZY_VENV)/.installed
	AMENT_PREFIX_PATH=$(abspath $(JAZZY_VENV)) CMAKE_PREFIX_PATH=$(abspath $(JAZZY_VENV)) \
		$(JAZZY_PY) -m pytest $(JAZZY_TESTS)

# The whole suite, slow end-to-end tests included; pytest's summary is the last thing printed.
test: lint colcon-test jazzy-test
	$(PY) -m pytest

# The quick loop while developing: everything but the tests marked slow.
test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) -m sparserefine_ros.tools.cli bench --json build/bench.json

clean:
	rm -rf build $(VENV) $(JAZZY_VENV) demo_output
