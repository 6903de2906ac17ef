pytest_plugins = ["redisfixtures", "emulators", "k8s.fixtures"]
