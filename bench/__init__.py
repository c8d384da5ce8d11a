"""Experiments on tinygpt's public API (`python -m bench.NAME`); nothing imports them."""
