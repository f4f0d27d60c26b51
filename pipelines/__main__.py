from pipelines.entry import main

main()
