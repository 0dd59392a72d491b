"""What goes on paper, as pure functions: the receipt, void-slip and test-page layout
(layout.py), the settlement, subtotal and transaction-list reports (reports.py, for the LCD
too), the held-order and deregistration slips, the receipt catalog (texts.py), and the print
queue's rules (queue.py: job states and what CANCEL and a power loss do to a job). The journal
stores the jobs; the print desk (firmware/app/services/printing.py) renders and spools them.
"""
