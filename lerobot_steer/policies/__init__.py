"""LeRobot policy types added by lerobot-steer, one folder per type (LeRobot's own layout)."""
