"""Control: what people may do through the bastion. Actions, rules and the policy evaluator (pure),
command lines, approvals and grant windows, and the gate that asks them for a session."""
