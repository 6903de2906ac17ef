pytest_plugins = ["redisfixtures"]
