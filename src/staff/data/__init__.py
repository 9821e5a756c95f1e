"""Data: read any source into rows with stable ids, format prompt/response, tokenize with a
response-only loss mask."""

from staff.data.demo import make_demo_rows
from staff.data.examples import Example, detect_format, to_examples
from staff.data.formatting import IGNORE_INDEX, TokenizedExample, encode_prompt, tokenize_examples
from staff.data.jsonl import write_jsonl_atomic
from staff.data.sources import DataError, load_rows

__all__ = ["DataError", "Example", "IGNORE_INDEX", "TokenizedExample", "detect_format",
           "encode_prompt", "load_rows", "make_demo_rows", "to_examples", "tokenize_examples",
           "write_jsonl_atomic"]
