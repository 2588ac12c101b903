"""Interactive shells: the screen model and the line tracker (pure, on pyte), and shell-line gating."""
