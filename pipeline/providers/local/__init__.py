"""``local``: offline previs renderer behind the provider interface."""
