"""The adaptation loop: labelled data, LoRA training with peft, the model bootstrap, and the
decisions made on scores (routing). Pure logic and training; it never imports faust or aiokafka."""
