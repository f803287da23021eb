"""The notifier: fans session events out into signed webhooks and delivers them durably."""
