"""Repository-level pytest settings: files that are not importable as tests."""

collect_ignore_glob = ["src/signalmint/store/migrations/*", "bench/*"]
