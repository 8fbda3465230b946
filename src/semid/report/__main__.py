from semid.report.cli import main

main()
