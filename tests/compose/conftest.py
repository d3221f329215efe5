pytest_plugins = ["leanlm.core.testing"]
