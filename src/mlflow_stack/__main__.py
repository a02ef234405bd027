from mlflow_stack.cli import main

main()
