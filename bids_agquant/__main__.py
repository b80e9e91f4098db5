from bids_agquant.cli.run import main

if __name__ == "__main__":
    raise SystemExit(main())
