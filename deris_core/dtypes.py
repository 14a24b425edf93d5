"""The ``--dtype`` choices and their help, shared by every command line (no torch: ``--help`` answers
without it). :func:`deris_core.hardware.choose_precision` implements the rule the help states."""

DTYPE_CHOICES = ("auto", "fp32", "bf16", "int8")
# The --dtype help of every command line (each prefixes its own default): the rule of choose_precision("auto").
DTYPE_HELP = ("auto: bf16 where the device computes it natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16, AMX or "
              "ARM BF16), else int8 linears on an x86 CPU with PyTorch's quantized kernels, else fp32; fp32 matches the "
              "official outputs; bf16 or int8 where they cannot run fall back with a note (docs/precision-and-hardware.md)")
