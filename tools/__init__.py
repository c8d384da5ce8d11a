"""Tools for working on tinygpt's source checkout, run as scripts (`python tools/NAME.py`);
not part of the installed package, and nothing in tinygpt imports them."""
