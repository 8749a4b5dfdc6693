from naturall2s.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
