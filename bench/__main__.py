"""``python -m bench [--quick] [--only W1,W2,W3,W4] [--device cpu|cuda] [--no-memory] [--no-record]``."""
from bench.runner import main

main()
