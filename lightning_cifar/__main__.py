from lightning_cifar.cli import main

main()
