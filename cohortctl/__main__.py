from cohortctl.cli import main

main()
