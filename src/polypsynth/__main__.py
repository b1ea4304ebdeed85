from polypsynth.cli import main

main()
