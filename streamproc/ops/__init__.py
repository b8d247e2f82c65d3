"""Operations: Prometheus metrics, the health and metrics HTTP endpoints, logging."""
