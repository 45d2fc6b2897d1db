"""fedvlm: federated fine-tuning of vision-language models with parameter-efficient adapters."""

import logging

# bitsandbytes (imported by peft) warns at import time, on CPUs with AVX512-BF16, that it
# cannot fetch optional kernels from the hub; it is noise offline and on every CLI error line.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
