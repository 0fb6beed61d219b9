"""Running a tunnel as an operator does: config-file tunnels brought up and down
(``up``), their state under /run, DNS, hooks, readiness for systemd, metrics, logging and
dropped privileges."""
