"""Text around the model: the tokenizer (and one built from a GGUF file), the model's jinja chat template,
the prompt templates that turn a context into a think-then-predict prompt, the think tags, and the check
that a tokenizer belongs to a model (``pairing``)."""
