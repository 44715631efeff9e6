"""The program's name and its debug switch, known to every command (and to nothing heavy: importing
this must not import Lightning)."""

PROG = "lightning-cifar"
# Set, or --debug given: usage errors show their traceback. Also reaches processes Lightning launches for DDP.
DEBUG_ENV = "LIGHTNING_CIFAR_DEBUG"
