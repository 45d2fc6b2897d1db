"""fedvlm: federated fine-tuning of vision-language models with parameter-efficient adapters."""
