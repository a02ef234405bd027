from mlflow_stack.cli.main import main

main()
