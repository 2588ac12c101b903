"""The Textual app for approvers and auditors (approvals queue, live sessions, replay)."""
