//! Local registry harness (docker-registry on 127.0.0.1).
