pytest_plugins = ["redisfixtures", "k8s.fixtures"]
