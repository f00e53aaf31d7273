"""FL clients: real PEFT LoRA local training, benign or malicious, as Ray actors."""
