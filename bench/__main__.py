"""``python -m bench [--quick] [--only W1,W2,W3,W4,W5,W6] [--device cpu|cuda] [--threads N] [--items N]
[--loop-items N] [--budget S] [--memory|--no-memory] [--out FILE|--no-record]``."""
from bench.runner import main

main()
