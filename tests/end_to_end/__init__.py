"""Whole commands against what goes wrong in real use: kills, hostile files, disks, DDP, the real data."""
