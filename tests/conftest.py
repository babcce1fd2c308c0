"""Test-wide settings: the compiler checks its IR invariants between passes."""

import os

from tracr.compiler import invariants

os.environ[invariants.CHECK_ENV] = "1"
