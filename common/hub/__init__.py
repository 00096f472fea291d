"""Models as folders, in reading order:

    config.py      PretrainedConfig: a dataclass that round-trips through config.json
    pretrained.py  PreTrainedModel: save_pretrained / from_pretrained (safetensors, atomic writes)
    adapters.py    LoRA adapters in peft's format (adapter_config.json + adapter_model.safetensors)
"""
