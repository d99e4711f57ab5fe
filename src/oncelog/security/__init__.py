"""Security: TLS listeners, SASL authentication and ACL authorization under Kafka's settings."""
