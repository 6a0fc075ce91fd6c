"""Waddle against the trackers users would pick instead; driven by ``bench_peers.py``.

``trackers`` holds one small adapter per tracker, ``worker`` the one timing loop that
runs in a fresh subprocess per tracker and round, ``report`` the medians and tables.
"""
