"""Benchmarks of convosyncd as its users feel it, against the floor set by git itself.

``python -m bench`` builds bare remotes and devices in a temporary folder, runs real
``convosyncd run`` subprocesses (with a private D-Bus and a recording notification
server where ``dbus-daemon`` is installed), and prints one markdown table: how fast a
handoff travels, what the daemon costs when idle, how it scales with history and with
repos, and how long it takes to start. It reports; it asserts nothing.
"""
