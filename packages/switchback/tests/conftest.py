pytest_plugins = ["leanlm.core.testing.fixtures"]
