export { stepUpChallenge, type AuthenticationFacts, type StepUpRequirement, type StepUpChallenge } from './step-up.ts';
